;; Closures: counters with private state, make-adder, compose, shared mutable state between
;; closures (set! on captured variables goes through boxes), variadic procedures, letrec.

(define (make-counter)
  (let ((count 0))
    (lambda ()
      (set! count (+ count 1))
      count)))

(define c1 (make-counter))
(define c2 (make-counter))
(c1) (c1) (c2)
(display (list 'c1 (c1) 'c2 (c2))) (newline)

(define (make-adder k) (lambda (x) (+ x k)))
(define add5 (make-adder 5))
(define add10 (make-adder 10))
(display (list (add5 1) (add10 1) ((make-adder 100) 1))) (newline)

(define (compose . fs)
  (if (null? fs)
      (lambda (x) x)
      (lambda (x) ((car fs) ((apply compose (cdr fs)) x)))))
(define add15-then-double (compose (lambda (x) (* 2 x)) add5 add10))
(display (add15-then-double 1)) (newline)
(display (map (compose add5 add5) '(1 2 3))) (newline)

;; A bank account: two closures share one balance.
(define (make-account balance)
  (define (deposit amount) (set! balance (+ balance amount)) balance)
  (define (withdraw amount)
    (if (> amount balance)
        "insufficient funds"
        (begin (set! balance (- balance amount)) balance)))
  (lambda (message . args)
    (cond ((eq? message 'deposit) (apply deposit args))
          ((eq? message 'withdraw) (apply withdraw args))
          ((eq? message 'balance) balance)
          (else (list 'unknown message)))))

(define account (make-account 100))
(display (account 'deposit 50)) (newline)
(display (account 'withdraw 30)) (newline)
(display (account 'withdraw 500)) (newline)
(display (account 'balance)) (newline)
(display (account 'close)) (newline)

;; Each closure captures its own binding of i.
(define thunks
  (let loop ((i 0) (acc '()))
    (if (= i 5) (reverse acc) (loop (+ i 1) (cons (lambda () (* i i)) acc)))))
(display (map (lambda (t) (t)) thunks)) (newline)

;; Mutual recursion through letrec; tail calls, so a deep chain is fine.
(define (parity n)
  (letrec ((even? (lambda (n) (if (= n 0) 'even (odd? (- n 1)))))
           (odd? (lambda (n) (if (= n 0) 'odd (even? (- n 1))))))
    (even? n)))
(display (list (parity 10) (parity 7) (parity 100001))) (newline)

;; Closures three levels deep, each level capturing from all the outer ones.
(define (curry3 f) (lambda (a) (lambda (b) (lambda (c) (f a b c)))))
(display ((((curry3 list) 'x) 'y) 'z)) (newline)

;; A generator with state in a closure.
(define (make-fib-gen)
  (let ((a 0) (b 1))
    (lambda ()
      (let ((result a))
        (set! a b)
        (set! b (+ result b))
        result))))
(define next-fib (make-fib-gen))
(display (let loop ((i 0) (acc '())) (if (= i 10) (reverse acc) (loop (+ i 1) (cons (next-fib) acc)))))
(newline)
