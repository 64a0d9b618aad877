;;; The codeheap demo: a small Lisp whose every lambda is compiled into the garbage-collected
;;; code heap, first by copy-and-patch stencils, then, when it is called often, by LLVM on a
;;; background thread. Run it with ./bazelw run //:demo

(define (section title)
  (newline) (display "== ") (display title) (newline))

(section "closures")
(define (make-counter)
  (let ((n 0))
    (lambda () (set! n (+ n 1)) n)))
(define tick (make-counter))
(tick)
(tick)
(display "a counter after three ticks: ") (display (tick)) (newline)
(define (make-adder k) (lambda (x) (+ x k)))
(define (compose f g) (lambda (x) (f (g x))))
(display "((compose (make-adder 1) (make-adder 10)) 100) = ")
(display ((compose (make-adder 1) (make-adder 10)) 100))
(newline)

(section "redefinition through an entry cell")
(define (greeting) "hello")
;; greet is compiled once, here; it calls greeting through greeting's entry cell.
(define (greet name) (string-append (greeting) ", " name))
(display (greet "world")) (newline)
;; A new greeting: its cell now jumps there, and greet (not recompiled) follows.
(define (greeting) "bonjour")
(display (greet "world")) (newline)

(section "two tiers")
(define (count-up n acc) (if (= n 0) acc (count-up (- n 1) (+ acc 1))))
(display "count-up starts as ") (display (procedure-tier count-up)) (display " code") (newline)
(display "(count-up 100000 0) = ") (display (count-up 100000 0)) (newline)
(tier-up-wait)
(display "after that many calls it runs ") (display (procedure-tier count-up))
(display " code (LISP_TIER_UP=never keeps it baseline)") (newline)

(section "a burst of generated code")
(define (report label)
  (display label)
  (display ": code in use ") (display (heap-stat 'code-used))
  (display " bytes, live code objects ") (display (heap-stat 'live-code-objects))
  (newline))
(gc)
(report "baseline           ")
;; Each call compiles a new lambda with eval: (lambda (x) (+ (* x i) i)).
(define (generate i)
  (eval (list 'lambda '(x) (list '+ (list '* 'x i) i))))
(define burst
  (let loop ((i 0) (acc '()))
    (if (= i 300) acc (loop (+ i 1) (cons (generate i) acc)))))
(display "300 generated lambdas applied to 2, summed: ")
(display (apply + (map (lambda (f) (f 2)) burst)))
(newline)
(report "with the 300 alive ")
(set! burst '())
(gc)
(report "dropped, then (gc) ")

(section "heap-stats")
(heap-stats)
