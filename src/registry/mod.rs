//! Service registry: lease-kept registrations, discovery, watch, load balancing (in progress).
