// shmbus — umbrella header: everything a user of the bus includes.
#pragma once

#include "shmbus/barrier.hpp"
#include "shmbus/condition.hpp"
#include "shmbus/error.hpp"
#include "shmbus/event.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/value.hpp"
#include "shmbus/version.hpp"
#include "shmbus/wait.hpp"
