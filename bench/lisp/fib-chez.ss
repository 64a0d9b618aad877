;; Chez Scheme version of fib.scm (same algorithm), a top-level program compiled with
;; compile-program; timed inside the program.
(import (chezscheme))
(include "common-chez.ss")
(define reps 20)
(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(bench "fib" reps (lambda () (fib 30)))
