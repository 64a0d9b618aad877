(if) (lambda) (let ((x)) x) (define) (set! 1 2) (1 . 2 . 3) )
