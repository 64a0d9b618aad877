;; Guile version of churn.scm; timed inside the program. Guile 3.0.8 cannot load more than about
;; 1,500 compiled objects into one process (each loaded image adds a Boehm root set; it aborts
;; with "Too many root sets"), so each lambda is compiled to bytecode (the whole compiler
;; pipeline, without loading the image) and called through primitive-eval for the result, and
;; bench/lisp_compare.py caps n (Guile's compiler takes milliseconds a lambda).
(use-modules (system base compile))
(include "common-guile.scm")
(define n 1000)
(define every 1000)
(define (churn)
  (let loop ((i 0) (acc 0))
    (if (= i n)
        acc
        (let* ((form `(lambda (x) (+ x ,i)))
               (acc (begin (compile form #:env (current-module) #:to 'bytecode)
                           (+ acc ((primitive-eval form) 1))))
               (i (+ i 1)))
          (when (= (remainder i every) 0) (gc))
          (loop i acc)))))
(timed "churn" n churn)
