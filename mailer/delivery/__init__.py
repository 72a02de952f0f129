"""Getting mail out and hearing back: the SMTP transport, workers and campaign runs, DKIM keys,
transactional mail, bounce and feedback processing, the spam check and the demo sink."""
