output "id" {
  description = "Bucket name (the configured name: known at plan time, unlike the computed id)."
  value       = aws_s3_bucket.this.bucket
}

output "arn" {
  description = "Bucket ARN."
  value       = aws_s3_bucket.this.arn
}
