%% audiosheet: capture of every engraved notehead's score time, pitch and page position.
%% Passed to LilyPond with -dinclude-settings=capture.ly (read after LilyPond's own init files,
%% before the score). What it does:
%%  * every score's music has all its repeats unfolded (volta, segno, percent, tremolo; as
%%    \unfoldRepeats does), so the printed pages and the timeline played from them agree note
%%    for note;
%%  * a Score-level engraver draws an invisible link ("ash:ID", PDF link annotation with the
%%    grob's extent) over every NoteHead and StaffSymbol, and writes, per score, one line per notehead (id, staff, moment in whole
%%    notes, grace part, duration, MIDI pitch, tie continuation), per timestep the tempo, and the
%%    dynamics and sustain-pedal events, to the file named by $AUDIOSHEET_CAPTURE.
%% The Python side (audiosheet.lilypond) reads that file and the SVG pages.

#(use-modules (ice-9 format))

#(define audiosheet-port
   (let ((path (getenv "AUDIOSHEET_CAPTURE")))
     (if (and path (not (string-null? path))) (open-output-file path) #f)))
#(define audiosheet-scores 0)
#(define audiosheet-heads 0)

#(set-object-property! 'audiosheet-id 'backend-type? string?)
#(set-object-property! 'audiosheet-id 'backend-doc "audiosheet's id of a notehead")
#(if (not (memq 'audiosheet-id all-backend-properties))
     (set! all-backend-properties (cons 'audiosheet-id all-backend-properties)))

#(define (audiosheet-line . items)
   (if audiosheet-port
       (begin
         (display (string-join (map (lambda (x) (if (string? x) x (format #f "~a" x))) items) "\t")
                  audiosheet-port)
         (newline audiosheet-port))))

#(define (audiosheet-num r) (exact->inexact r))

%% Unfold every repeat of every score's music before LilyPond preprocesses it: the unfolding
%% goes into the (lily) module's toplevel-music-functions right after chord/note repeats are
%% expanded and before music lengths are precomputed (later, the score would keep its folded
%% length and lose its end).
#(let* ((lily (resolve-module '(lily)))
        (fns (module-ref lily 'toplevel-music-functions)))
   (module-set! lily 'toplevel-music-functions
                (append (list-head fns 2)
                        (list (lambda (music) (unfold-repeats '() music)))
                        (list-tail fns 2))))

#(define (audiosheet-tag grob url)
   "Wrap the grob's stencil: the same drawing plus a link to URL over its extent."
   (let ((orig (ly:grob-property-data grob 'stencil)))
     (ly:grob-set-property!
      grob 'stencil
      (lambda (g)
        (let ((st (if (procedure? orig) (orig g) orig)))
          (if (ly:stencil? st)
              (let ((x (ly:stencil-extent st X))
                    (y (ly:stencil-extent st Y)))
                (if (or (interval-empty? x) (interval-empty? y))
                    st
                    (ly:stencil-add
                     st (ly:make-stencil (list 'url-link url x y) x y))))
              st))))))

#(define (audiosheet-moment m)
   (cons (audiosheet-num (ly:moment-main m)) (audiosheet-num (ly:moment-grace m))))

#(define (audiosheet-capture context)
   (let ((score #f)
         (staffs (make-hash-table 7))
         (ties '())
         (last-tempo #f))
     (define (now) (audiosheet-moment (ly:context-current-moment context)))
     (define (staff-of engraver)
       (let* ((ctx (ly:translator-context engraver))
              (staff (or (ly:context-find ctx 'Staff) ctx))
              (k (hashq-ref staffs staff)))
         (or k (let ((n (hash-count (const #t) staffs)))
                 (hashq-set! staffs staff n)
                 n))))
     (define (event-line kind event . more)
       (let ((t (now)))
         (apply audiosheet-line score kind (car t) (cdr t) more)))
     (make-engraver
      ((initialize engraver)
       (set! audiosheet-scores (1+ audiosheet-scores))
       (set! score audiosheet-scores)
       (audiosheet-line score "score"))
      ((process-music engraver)
       (let ((tempo (ly:context-property context 'tempoWholesPerMinute)))
         (if (and (ly:moment? tempo) (not (equal? tempo last-tempo)))
             (let ((t (now)))
               (set! last-tempo tempo)
               (audiosheet-line score "tempo" (car t) (cdr t)
                                (audiosheet-num (ly:moment-main tempo)))))))
      (listeners
       ((tempo-change-event engraver event)
        (let ((text (ly:event-property event 'text #f))
              (count (ly:event-property event 'metronome-count #f)))
          (event-line "tempotext" event
                      (if (markup? text) (markup->string text) "")
                      (if (number? count) count ""))))
       ((absolute-dynamic-event engraver event)
        (event-line "dynamic" event (ly:event-property event 'text "")))
       ((crescendo-event engraver event)
        (event-line "cresc" event (ly:event-property event 'span-direction 0)))
       ((decrescendo-event engraver event)
        (event-line "decresc" event (ly:event-property event 'span-direction 0)))
       ((sustain-event engraver event)
        (event-line "sustain" event (ly:event-property event 'span-direction 0))))
      (acknowledgers
       ((note-head-interface engraver grob source-engraver)
        (let* ((cause (ly:grob-property grob 'cause))
               (pitch (and (ly:stream-event? cause) (ly:event-property cause 'pitch #f)))
               (dur (and (ly:stream-event? cause) (ly:event-property cause 'duration #f))))
          (if (and (ly:pitch? pitch) (ly:duration? dur)
                   (not (eq? #t (ly:grob-property grob 'transparent #f))))
              (let ((id (begin (set! audiosheet-heads (1+ audiosheet-heads))
                               (format #f "ash~a" audiosheet-heads)))
                    (t (now)))
                (ly:grob-set-property! grob 'audiosheet-id id)
                (audiosheet-tag grob (string-append "ash:" id))
                (audiosheet-line score "note" id (staff-of source-engraver) (car t) (cdr t)
                                 (audiosheet-num (ly:moment-main (ly:duration-length dur)))
                                 (+ 60 (ly:pitch-semitones pitch)))))))
       ((staff-symbol-interface engraver grob source-engraver)
        (audiosheet-tag grob (format #f "ash:staff-~a-~a-~a" score (staff-of source-engraver)
                                     (ly:grob-property grob 'line-count 5))))
       ((tie-interface engraver grob source-engraver)
        (if (ly:spanner? grob)  ; not a RepeatTie or LaissezVibrerTie: those tie to nothing
            (set! ties (cons grob ties)))))
      ((finalize engraver)
       (for-each
        (lambda (tie)
          (let ((left (ly:spanner-bound tie LEFT))
                (right (ly:spanner-bound tie RIGHT)))
            (if (and (ly:grob? left) (ly:grob? right)
                     (grob::has-interface left 'note-head-interface)
                     (grob::has-interface right 'note-head-interface))
                (let ((a (ly:grob-property left 'audiosheet-id #f))
                      (b (ly:grob-property right 'audiosheet-id #f)))
                  (if (and a b) (audiosheet-line score "tie" a b))))))
        ties)
       (let ((t (now)))
         (audiosheet-line score "end" (car t) (cdr t)))
       (if audiosheet-port (force-output audiosheet-port))))))

\layout {
  \context {
    \Score
    \consists #audiosheet-capture
  }
}
