-- The quality score and findings of the data as staged, kept beside the
-- approved data's: an approval with corrections replaces `quality_score`,
-- `validation_errors` and `validation_warnings` with the approved data's, and
-- these keep what the staged data scored. Written when an export is staged,
-- never updated.
ALTER TABLE staged_exports ADD COLUMN staged_validation_errors TEXT NOT NULL DEFAULT '[]';
ALTER TABLE staged_exports ADD COLUMN staged_validation_warnings TEXT NOT NULL DEFAULT '[]';
ALTER TABLE staged_exports ADD COLUMN staged_quality_score INTEGER NOT NULL DEFAULT 0;

-- Exports staged before this migration: an approved one's staged findings are
-- in its approval's audit row (the export before the approval); the others'
-- are still their own columns.
UPDATE staged_exports SET
  staged_validation_errors = COALESCE((SELECT json_extract(a.before_snapshot, '$.validation_errors')
      FROM staging_audit a WHERE a.export_id = staged_exports.id AND a.event = 'approve'
      ORDER BY a.seq LIMIT 1), validation_errors),
  staged_validation_warnings = COALESCE((SELECT json_extract(a.before_snapshot, '$.validation_warnings')
      FROM staging_audit a WHERE a.export_id = staged_exports.id AND a.event = 'approve'
      ORDER BY a.seq LIMIT 1), validation_warnings),
  staged_quality_score = COALESCE((SELECT json_extract(a.before_snapshot, '$.quality_score')
      FROM staging_audit a WHERE a.export_id = staged_exports.id AND a.event = 'approve'
      ORDER BY a.seq LIMIT 1), quality_score);
