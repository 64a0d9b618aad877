;; Guile version of redefine.scm: caller is compiled with the file; f is not defined in it (so
;; the compiler cannot inline it) but at run time, by `compile` of (define (f x) (+ x i)) to a
;; value (compiled and loaded), n times, calling caller once after each. Loading compiled code
;; registers a Boehm root set each time and Guile 3.0.8 aborts after about 1,500, so
;; bench/lisp_compare.py caps n at 1,000.
(use-modules (system base compile))
(include "common-guile.scm")
(define n 1000)
(define (caller x) (f x))
(compile '(define (f x) (- x)) #:env (current-module) #:to 'value)
(define (redefine)
  (let loop ((i 0) (acc 0))
    (if (= i n)
        acc
        (begin
          (compile `(define (f x) (+ x ,i)) #:env (current-module) #:to 'value)
          (loop (+ i 1) (+ acc (caller 1)))))))
(timed "redefine" n redefine)
