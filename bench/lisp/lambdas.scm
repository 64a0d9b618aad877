;; Compiles 10,000 small lambdas with eval, calls each once, drops them and collects. Timed as in
;; fib.scm: the baseline run sets `n` to 0.
(define n 10000)
(define (churn i acc)
  (if (= i n)
      acc
      (churn (+ i 1) (+ acc ((eval (list 'lambda '(x) (list '+ 'x i))) 1)))))
(define result (churn 0 0))
(gc)
(when (> n 0) (display "result ") (display result) (newline))
