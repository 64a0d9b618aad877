;; fib(30), doubly recursive, `reps` times. Our Lisp has no clock, so bench/lisp_compare.py times
;; the whole process and subtracts a baseline run of this file with `reps` set to 0.
(define reps 20)
(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))
(define (bench i r) (if (= i reps) r (bench (+ i 1) (fib 30))))
(define result (bench 0 0))
(when (> reps 0) (display "result ") (display result) (newline))
