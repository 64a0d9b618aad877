;; Redefinition seen by a compiled caller: `caller` is compiled once and calls the global f
;; (through its entry cell); f is redefined n times with `eval` of a (define (f x) (+ x i))
;; with a distinct body, and caller is called once after each. measure redefine N NS RESULT.
(define n 10000)
(define (report name n ns result)
  (display "measure ") (display name) (display " ") (display n) (display " ") (display ns)
  (display " ") (display result) (newline))
(define (f x) (- x))
(define (caller x) (f x))
(define (redefine i acc)
  (if (= i n)
      acc
      (begin
        (eval (list 'define '(f x) (list '+ 'x i)))
        (redefine (+ i 1) (+ acc (caller 1))))))
(let* ((start (current-time-ns))
       (result (redefine 0 0)))
  (report "redefine" n (- (current-time-ns) start) result))
