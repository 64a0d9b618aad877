;; Chez Scheme version of churn.scm: each lambda is compiled to machine code at run time by
;; `compile` (in the interaction environment), called once and dropped; (collect) after every
;; `every`. Timed inside the program.
(import (chezscheme))
(include "common-chez.ss")
(define n 10000)
(define every 1000)
(define (churn)
  (let loop ([i 0] [acc 0])
    (if (= i n)
        acc
        (let ([acc (+ acc ((compile `(lambda (x) (+ x ,i))) 1))]
              [i (+ i 1)])
          (when (= (remainder i every) 0) (collect))
          (loop i acc)))))
(timed "churn" n churn)
