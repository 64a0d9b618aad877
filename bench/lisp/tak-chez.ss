;; Chez Scheme version of tak.scm (same algorithm); timed inside the program.
(import (chezscheme))
(include "common-chez.ss")
(define reps 1000)
(define (tak x y z)
  (if (not (< y x))
      z
      (tak (tak (- x 1) y z) (tak (- y 1) z x) (tak (- z 1) x y))))
(bench "tak" reps (lambda () (tak 18 12 6)))
