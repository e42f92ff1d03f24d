#pragma once
// The umbrella header of libmpq.
#include <mpq/calibration.h>
#include <mpq/error.h>
#include <mpq/format.h>
#include <mpq/quantizer.h>
