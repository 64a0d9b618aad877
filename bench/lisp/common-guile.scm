;; Shared by the Guile programs: timers that print one line
;;   measure NAME N NANOSECONDS RESULT
;; per measurement (bench/lisp_compare.py reads these).
(define (now-ns)
  (quotient (* (get-internal-real-time) 1000000000) internal-time-units-per-second))
(define (report name n ns result)
  (display "measure ") (display name) (display " ") (display n) (display " ") (display ns)
  (display " ") (display result) (newline))
;; One call of thunk, whose work counts as n units.
(define (timed name n thunk)
  (let* ((start (now-ns))
         (result (thunk)))
    (report name n (- (now-ns) start) result)))
;; reps calls of thunk; the result is the last call's.
(define (bench name reps thunk)
  (timed name reps (lambda ()
                     (let loop ((i 0) (result #f))
                       (if (= i reps) result (loop (+ i 1) (thunk)))))))
