;; (tak 18 12 6), `reps` times, timed as in fib.scm.
(define reps 1000)
(define (report name n ns result)
  (display "measure ") (display name) (display " ") (display n) (display " ") (display ns)
  (display " ") (display result) (newline))
(define (tak x y z)
  (if (not (< y x))
      z
      (tak (tak (- x 1) y z) (tak (- y 1) z x) (tak (- z 1) x y))))
(define (bench i r) (if (= i reps) r (bench (+ i 1) (tak 18 12 6))))
(let* ((start (current-time-ns))
       (result (bench 0 0)))
  (report "tak" reps (- (current-time-ns) start) result))
