(define (f a . rest) (apply + a rest))
(define g (lambda args (length args)))
(f 1 2 3 4 5)
