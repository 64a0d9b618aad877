;; N queens: counts the solutions for boards of 1 to 8 squares, and shows the first solution
;; for 8. Lists, closures over the partial placement, apply and map.

(define (ok? row distance placed)
  (or (null? placed)
      (and (not (= (car placed) (+ row distance)))
           (not (= (car placed) (- row distance)))
           (not (= (car placed) row))
           (ok? row (+ distance 1) (cdr placed)))))

(define (range a b)
  (if (> a b) '() (cons a (range (+ a 1) b))))

;; All placements of n queens, each a list of rows, most recent column first.
(define (queens n)
  (let place ((column 0) (placed '()))
    (if (= column n)
        (list placed)
        (apply append
               (map (lambda (row)
                      (if (ok? row 1 placed)
                          (place (+ column 1) (cons row placed))
                          '()))
                    (range 1 n))))))

(define (count-solutions n)
  (length (queens n)))

(for-each (lambda (n)
            (display n) (display " queens: ") (display (count-solutions n))
            (display " solutions") (newline))
          (range 1 8))

(define (show-board solution n)
  (for-each (lambda (row)
              (for-each (lambda (col) (display (if (= col row) "Q " ". "))) (range 1 n))
              (newline))
            solution))

(display "first solution for 8:") (newline)
(show-board (reverse (car (queens 8))) 8)
