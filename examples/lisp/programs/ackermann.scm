;; Ackermann's function: recursion that is partly tail (the m - 1 calls) and partly not.

(define (ack m n)
  (cond ((= m 0) (+ n 1))
        ((= n 0) (ack (- m 1) 1))
        (else (ack (- m 1) (ack m (- n 1))))))

(define (show m n)
  (display "(ack ") (display m) (display " ") (display n) (display ") = ")
  (display (ack m n))
  (newline))

(for-each (lambda (m) (for-each (lambda (n) (show m n)) '(0 1 2 3 4))) '(0 1 2 3))
(show 2 100)
(show 3 8)
