;; Code churn: eval compiles a fresh lambda on every iteration (each one a code object in the
;; code heap), calls it and drops it. The collector finalizes the dropped code objects and the
;; code heap recycles their machine code, so the code in use returns to its baseline.

(define (make-lambda i)
  (eval (list 'lambda '(x) (list '* 'x i))))

(define (churn n acc)
  (if (= n 0)
      acc
      (churn (- n 1) (+ acc ((make-lambda n) 2)))))

(gc)
(define baseline-used (heap-stat 'code-used))
(define baseline-finalized (heap-stat 'code-objects-finalized))

(display "sum over 200 generated lambdas: ")
(display (churn 200 0))
(newline)

;; Redefinitions churn too: each define compiles a new procedure; the old one is collected.
(define (redefine-many n)
  (when (> n 0)
    (eval (list 'define '(generated) n))
    (redefine-many (- n 1))))
(redefine-many 50)
(display "last definition wins: ")
(display (generated))
(newline)

(gc)
(display "generated code objects collected: ")
(display (>= (- (heap-stat 'code-objects-finalized) baseline-finalized) 240))
(newline)
(display "code in use back near the baseline: ")
(display (< (- (heap-stat 'code-used) baseline-used) 4096))
(newline)
