output "mlflow_tracking_uri" {
  description = "MLflow tracking URI (inside the VPC)."
  value       = "http://${aws_instance.services.private_ip}:5000"
}

output "prefect_api_url" {
  description = "Prefect API URL (inside the VPC)."
  value       = "http://${aws_instance.services.private_ip}:4200/api"
}

output "db_endpoint" {
  description = "RDS PostgreSQL endpoint (databases mlflow and prefect)."
  value       = aws_db_instance.this.endpoint
}
