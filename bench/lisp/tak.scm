;; (tak 18 12 6), `reps` times (timed as in fib.scm).
(define reps 1000)
(define (tak x y z)
  (if (not (< y x))
      z
      (tak (tak (- x 1) y z) (tak (- y 1) z x) (tak (- z 1) x y))))
(define (bench i r) (if (= i reps) r (bench (+ i 1) (tak 18 12 6))))
(define result (bench 0 0))
(when (> reps 0) (display "result ") (display result) (newline))
