;; Guile version of fib.scm (same algorithm); timed inside the program.
(include "common-guile.scm")
(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(bench 20 (lambda () (fib 30)))
