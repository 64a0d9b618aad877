;; SBCL version of churn.scm: each lambda compiled to machine code by `compile`, called once and
;; dropped; (sb-ext:gc) after every *every*. Timed inside the program.
(load (merge-pathnames "common.lisp" *load-truename*))
(declaim (optimize (speed 3) (safety 1)))
(defparameter *n* 10000)
(defparameter *every* 1000)
(defun churn (n every)
  (let ((acc 0))
    (dotimes (i n acc)
      (incf acc (funcall (compile nil `(lambda (x) (+ x ,i))) 1))
      (when (zerop (mod (1+ i) every)) (sb-ext:gc)))))
(timed "churn" *n* (lambda () (churn *n* *every*)))
