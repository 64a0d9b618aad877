;; Shared by the SBCL programs: the optimisation policy and timers that print one line
;;   measure NAME N NANOSECONDS RESULT
;; per measurement (bench/lisp_compare.py reads these). SBCL 2.2's get-internal-real-time reads
;; CLOCK_MONOTONIC_COARSE (4 ms steps here), so the timers read CLOCK_MONOTONIC (clock id 1 on
;; Linux) through sb-unix instead.
(declaim (optimize (speed 3) (safety 1)))
(defun now-ns ()
  (multiple-value-bind (sec nsec) (sb-unix::clock-gettime 1)
    (+ (* sec 1000000000) nsec)))
(defun report-measure (name n ns result)
  (format t "measure ~a ~a ~a ~a~%" name n ns result))
;; One call of THUNK, whose work counts as N units.
(defun timed (name n thunk)
  (let* ((start (now-ns))
         (result (funcall thunk)))
    (report-measure name n (- (now-ns) start) result)))
;; REPS calls of THUNK; the result is the last call's.
(defun bench (name reps thunk)
  (timed name reps (lambda ()
                     (let ((result nil))
                       (dotimes (i reps result) (setf result (funcall thunk)))))))
