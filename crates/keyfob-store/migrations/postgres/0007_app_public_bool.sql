-- Whether an application is public is a boolean, as `allow_fragment` is.
ALTER TABLE apps ALTER COLUMN public TYPE BOOLEAN USING public <> 0;
