"""Is a model robust? Clean and PGD accuracy (`evaluate`), AutoAttack (`autoattack`), the gradient-masking audit
(`audit`) and the PAG score (`pagscore`)."""
