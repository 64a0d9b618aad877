;; Shared by the Chez Scheme programs (included into each top-level program): timers that print
;; one line
;;   measure NAME N NANOSECONDS RESULT
;; per measurement (bench/lisp_compare.py reads these).
(define (now-ns)
  (let ([t (current-time 'time-monotonic)])
    (+ (* (time-second t) 1000000000) (time-nanosecond t))))
(define (report name n ns result)
  (printf "measure ~a ~a ~a ~a~%" name n ns result))
;; One call of thunk, whose work counts as n units.
(define (timed name n thunk)
  (let* ([start (now-ns)]
         [result (thunk)])
    (report name n (- (now-ns) start) result)))
;; reps calls of thunk; the result is the last call's.
(define (bench name reps thunk)
  (timed name reps (lambda ()
                     (let loop ([i 0] [result #f])
                       (if (= i reps) result (loop (+ i 1) (thunk)))))))
