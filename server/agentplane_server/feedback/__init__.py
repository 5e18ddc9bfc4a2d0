"""FeedbackService: feedback on agents' answers, cross-agent queries, summaries and tokens."""
