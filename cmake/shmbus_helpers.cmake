# Small helpers shared by tests/, bench/ and examples/.

# One source file, one executable linked to the umbrella target and our
# warnings. Extra arguments are further libraries.
function(shmbus_add_program target source)
  add_executable(${target} ${source})
  target_link_libraries(${target} PRIVATE shmbus::shmbus shmbus::warnings ${ARGN})
endfunction()
