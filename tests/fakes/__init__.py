"""Loopback fakes of FCM, APNs and Web Push that real client libraries can talk to."""
