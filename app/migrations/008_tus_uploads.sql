-- Resumable (tus) uploads in progress: the offset is the server's word on how many bytes it
-- holds, the bytes themselves are a file under the API node's data dir (app/services/tus.py).
-- A finished one points at the ordinary upload it became; the row goes at expires_at.
CREATE TABLE tus_uploads (
    id             text PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    upload_length  bigint NOT NULL CHECK (upload_length >= 0),
    upload_offset  bigint NOT NULL DEFAULT 0 CHECK (upload_offset >= 0),
    file_name      text NOT NULL,
    content_type   text,
    metadata       text,                        -- Upload-Metadata as sent, given back on HEAD
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    upload_id      bigint REFERENCES uploads (id) ON DELETE SET NULL,
    file_path      text                         -- the finished upload's file_path
);
CREATE INDEX tus_uploads_expires ON tus_uploads (expires_at);
CREATE INDEX tus_uploads_open ON tus_uploads (account_id) WHERE file_path IS NULL;
