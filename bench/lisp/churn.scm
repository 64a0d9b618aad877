;; Code churn: `eval`s n distinct lambdas (lambda (x) (+ x i)), calls each once and drops it,
;; (gc) after every `every`. Prints the time (measure churn N NS RESULT, RESULT the sum of the
;; calls) and the peak of (heap-stat 'code-committed), sampled every `sample` lambdas with the
;; clock stopped (stat peak-code-committed BYTES).
(define n 10000)
(define every 1000)
(define sample 100)
(define (report name n ns result)
  (display "measure ") (display name) (display " ") (display n) (display " ") (display ns)
  (display " ") (display result) (newline))
(define peak 0)
(define off-clock 0)  ; nanoseconds spent sampling, not counted
(define (sample!)
  (let ((t0 (current-time-ns))
        (c (heap-stat 'code-committed)))
    (when (> c peak) (set! peak c))
    (set! off-clock (+ off-clock (- (current-time-ns) t0)))))
(define (churn i acc)
  (if (= i n)
      acc
      (let ((acc (+ acc ((eval (list 'lambda '(x) (list '+ 'x i))) 1)))
            (i (+ i 1)))
        (when (= (remainder i sample) 0) (sample!))
        (when (= (remainder i every) 0) (gc))
        (churn i acc))))
(gc)
(sample!)
(set! off-clock 0)
(let* ((start (current-time-ns))
       (result (churn 0 0))
       (end (current-time-ns)))
  (report "churn" n (- (- end start) off-clock) result)
  (display "stat peak-code-committed ") (display peak) (newline))
