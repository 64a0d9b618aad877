;; Guile version of lambdas.scm; timed inside the program.
(use-modules (system base compile))
;; 1,000 runs of Guile's compiler on small lambdas, then a collection. Guile 3.0.8 cannot load
;; that many compiled objects into one process (each loaded image adds a Boehm root set, and it
;; aborts with "Too many root sets" after a few thousand), so each lambda is compiled to bytecode
;; (the whole compiler pipeline, without loading the image) and called through primitive-eval
;; for the result.
(define (churn n)
  (let loop ((i 0) (acc 0))
    (if (= i n)
        acc
        (let ((form `(lambda (x) (+ x ,i))))
          (compile form #:env (current-module) #:to 'bytecode)
          (loop (+ i 1) (+ acc ((primitive-eval form) 1)))))))
(define n 1000)  ; not 10,000: Guile's compiler takes ~10 ms a lambda here
(define start (get-internal-real-time))
(define result (churn n))
(gc)
(define end (get-internal-real-time))
(display "result ") (display result) (newline)
(display "reps ") (display n) (newline)
(display "ms ") (display (exact->inexact (/ (* 1000 (- end start)) internal-time-units-per-second)))
(newline)
