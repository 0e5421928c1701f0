-- Who last sent an export back to its preparer, why and when
-- (`PUT …/request-changes`), and who gave the second approval of a first
-- approval that changed an amount (`STAGING_SECOND_APPROVAL=amount_changes`).
-- Exports staged before this migration had neither: the columns stay NULL.
ALTER TABLE staged_exports ADD COLUMN changes_requested_by TEXT;
ALTER TABLE staged_exports ADD COLUMN changes_requested_reason TEXT;
ALTER TABLE staged_exports ADD COLUMN changes_requested_at INTEGER;
ALTER TABLE staged_exports ADD COLUMN second_approved_by TEXT;
ALTER TABLE staged_exports ADD COLUMN second_approved_at INTEGER;
