"""What is written down: checkpoint folders (`checkpoints`: sharded safetensors, config, metrics), their model
cards (`card`), which record a table shows (`report`), JSON files (`files`) and where a number came from
(`provenance`)."""
