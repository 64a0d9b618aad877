;; SBCL version of fib.scm (same algorithm, no type declarations); timed inside the program.
(load (merge-pathnames "common.lisp" *load-truename*))
(declaim (optimize (speed 3) (safety 1)))
(defparameter *reps* 20)
(defun fib (n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(bench "fib" *reps* (lambda () (fib 30)))
