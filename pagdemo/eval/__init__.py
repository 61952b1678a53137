"""Is a model robust? Clean and PGD accuracy (`evaluate`), AutoAttack (`autoattack`), the gradient-masking
audit (`masking`, `audit`) and the PAG score (`pagscore`)."""
