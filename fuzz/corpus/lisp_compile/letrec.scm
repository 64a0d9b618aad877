(define (h x) (define (even? n) (if (= n 0) #t (odd? (- n 1)))) (define (odd? n) (if (= n 0) #f (even? (- n 1)))) (letrec* ((a 1) (b (+ a 1))) (and (even? x) b)))
