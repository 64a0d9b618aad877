;; Shared by the SBCL programs: the optimisation policy and a timer around REPS runs of a thunk.
;; SBCL 2.2's get-internal-real-time reads CLOCK_MONOTONIC_COARSE (4 ms steps here), so the
;; timer reads CLOCK_MONOTONIC (clock id 1 on Linux) through sb-unix instead.
(declaim (optimize (speed 3) (safety 1)))
(defun now-ns ()
  (multiple-value-bind (sec nsec) (sb-unix::clock-gettime 1)
    (+ (* sec 1000000000) nsec)))
(defun bench (reps thunk)
  (let ((result nil)
        (start (now-ns)))
    (dotimes (i reps) (setf result (funcall thunk)))
    (let ((end (now-ns)))
      (format t "result ~a~%reps ~a~%ms ~,3f~%" result reps (/ (- end start) 1d6)))))
