#pragma once
// The umbrella header of libmpq.
#include <mpq/awq.h>
#include <mpq/calibration.h>
#include <mpq/candidates.h>
#include <mpq/error.h>
#include <mpq/expert.h>
#include <mpq/format.h>
#include <mpq/gguf.h>
#include <mpq/gptq.h>
#include <mpq/imatrix.h>
#include <mpq/kquants.h>
#include <mpq/plan.h>
#include <mpq/quantizer.h>
#include <mpq/search.h>
#include <mpq/smoothquant.h>
