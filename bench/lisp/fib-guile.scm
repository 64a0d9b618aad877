;; Guile version of fib.scm (same algorithm); timed inside the program.
(include "common-guile.scm")
(define reps 20)
(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(bench "fib" reps (lambda () (fib 30)))
