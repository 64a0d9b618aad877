;; SBCL version of lambdas.scm; timed inside the program.
(load (merge-pathnames "common.lisp" *load-truename*))
(declaim (optimize (speed 3) (safety 1)))
;; 10,000 calls of the native compiler on small lambdas, each called once, then a full GC.
(defun churn (n)
  (let ((acc 0))
    (dotimes (i n) (incf acc (funcall (compile nil `(lambda (x) (+ x ,i))) 1)))
    acc))
(let* ((n 10000)
       (start (now-ns))
       (result (churn n)))
  (sb-ext:gc :full t)
  (format t "result ~a~%reps ~a~%ms ~,3f~%" result n (/ (- (now-ns) start) 1d6)))
