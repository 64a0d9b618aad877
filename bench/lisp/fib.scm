;; fib(30), doubly recursive, `reps` times, timed in-process with (current-time-ns). The clock is
;; read inside one top-level form, so compiling the forms is not timed (tiering up is). Prints
;;   measure NAME N NANOSECONDS RESULT
;; (bench/lisp_compare.py reads it).
(define reps 20)
(define (report name n ns result)
  (display "measure ") (display name) (display " ") (display n) (display " ") (display ns)
  (display " ") (display result) (newline))
(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(define (bench i r) (if (= i reps) r (bench (+ i 1) (fib 30))))
(let* ((start (current-time-ns))
       (result (bench 0 0)))
  (report "fib" reps (- (current-time-ns) start) result))
