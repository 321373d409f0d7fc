output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The VPC's address range (services accept traffic from it only)."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone, in the order given."
  value       = aws_subnet.private[*].id
}

output "cluster_security_group_id" {
  description = "Security group of the GPU nodes."
  value       = aws_security_group.cluster.id
}
