;; SBCL version of tak.scm (same algorithm, no type declarations); timed inside the program.
(load (merge-pathnames "common.lisp" *load-truename*))
(declaim (optimize (speed 3) (safety 1)))
(defparameter *reps* 1000)
(defun tak (x y z)
  (if (not (< y x))
      z
      (tak (tak (- x 1) y z) (tak (- y 1) z x) (tak (- z 1) x y))))
(bench "tak" *reps* (lambda () (tak 18 12 6)))
