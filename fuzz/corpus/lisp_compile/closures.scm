(define (counter) (let ((n 0)) (lambda () (set! n (+ n 1)) n)))
(define c (counter))
(c) (c)
