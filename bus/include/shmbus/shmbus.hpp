// shmbus — umbrella header: everything a user of the bus includes.
#pragma once

#include "shmbus/bus.hpp"
#include "shmbus/error.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/process.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/resource_tracker.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/topology.hpp"
#include "shmbus/version.hpp"
#include "shmbus/wait.hpp"
