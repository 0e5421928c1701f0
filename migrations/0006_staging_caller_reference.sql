-- AP Intake's post body may carry the caller's own `external_reference`. When a
-- destination is configured and answers with its reference, that one is the
-- export's `external_reference` and the caller's is kept here; otherwise both hold
-- the caller's.
ALTER TABLE staged_exports ADD COLUMN caller_reference TEXT;
