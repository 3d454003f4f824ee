-- Accept rules: the kind and compatibility class of the difference accepted as intended (any when NULL), and
-- a note saying why (any rule may carry one).
ALTER TABLE rules ADD COLUMN kind TEXT;
ALTER TABLE rules ADD COLUMN compat TEXT;
ALTER TABLE rules ADD COLUMN note TEXT;
