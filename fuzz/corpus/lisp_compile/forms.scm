(begin (define v 1) (when v (unless #f (let* ((a 1) (b a)) (or #f (and a b))))) (cond ((assq 'b '((a 1) (b 2))) => cadr) (else 0)))
