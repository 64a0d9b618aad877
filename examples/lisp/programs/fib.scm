;; Fibonacci three ways: doubly recursive (non-tail calls through a global), iterative (a named
;; let, so tail calls), and with an accumulator list.

(define (fib n)
  (if (< n 2)
      n
      (+ (fib (- n 1)) (fib (- n 2)))))

(define (show-fibs i n)
  (when (<= i n)
    (display "fib(") (display i) (display ") = ") (display (fib i)) (newline)
    (show-fibs (+ i 1) n)))

(show-fibs 0 12)
(display "fib(27) = ") (display (fib 27)) (newline)

(define (fib-iter n)
  (let loop ((a 0) (b 1) (i 0))
    (if (= i n) a (loop b (+ a b) (+ i 1)))))

(display "fib-iter(80) = ") (display (fib-iter 80)) (newline)

(define (fib-list n)
  (let loop ((i 0) (acc '()))
    (if (> i n) (reverse acc) (loop (+ i 1) (cons (fib-iter i) acc)))))
(display (fib-list 15)) (newline)
