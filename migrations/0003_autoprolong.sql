-- BILLmanager 5/6 server-side automatic renewal: such licenses are not renewed by licrenew
-- unless a policy says override_autoprolong = true.
ALTER TABLE licenses ADD COLUMN autoprolong INTEGER NOT NULL DEFAULT 0;
