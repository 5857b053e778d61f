-- Student vs teacher quality per subtype across the nightly evaluation runs
-- (eval_runs is written by the nightly student-drift job). A growing gap means re-distil.
SELECT finished_at, run_id, subtype, student_score, teacher_score, gap, n
FROM eval_runs
ORDER BY subtype, finished_at;
