;; SBCL version of redefine.scm: caller is compiled once (on load) and calls f through its
;; fdefinition; f is redefined *n* times by `eval` of (defun f (x) (+ x i)) (natively compiled:
;; *evaluator-mode* is :compile), and caller is called once after each. The redefinition
;; style-warnings are muffled.
(load (merge-pathnames "common.lisp" *load-truename*))
(declaim (optimize (speed 3) (safety 1)))
(defparameter *n* 10000)
(defun f (x) (- x))
(defun caller (x) (f x))
(defun redefine (n)
  (let ((acc 0))
    (handler-bind ((warning #'muffle-warning))
      (dotimes (i n acc)
        (eval `(defun f (x) (+ x ,i)))
        (incf acc (caller 1))))))
(timed "redefine" *n* (lambda () (redefine *n*)))
